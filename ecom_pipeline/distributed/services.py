"""Throwaway PostgreSQL and Redis servers on loopback, for the local distributed setup and its tests.

``PostgresServer`` runs ``initdb`` into a fresh directory and ``pg_ctl`` on a free 127.0.0.1 port (trust
auth, TCP only); ``RedisServer`` runs ``redis-server`` without persistence.  Both are context managers that
stop the server and delete its directory on exit.  PostgreSQL refuses to run as root: under root the
cluster is created and started as the ``postgres`` system user (Debian's package creates it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

POSTGRES_BINARIES = ("initdb", "pg_ctl")
REDIS_BINARIES = ("redis-server",)
POSTGRES_USER = "ecom"  # the cluster's superuser (trust auth on loopback: a throwaway cluster)
START_TIMEOUT_S = 60.0


def missing_binaries(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s\n{tail}")


def _as_postgres_user() -> list[str]:
    """Command prefix that drops root to the ``postgres`` user (initdb/postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no 'postgres' user to run PostgreSQL as") from exc
    return ["runuser", "-u", "postgres", "--"]


class Service:
    """``with`` support for anything with ``start()``/``stop()``: a failed start cleans up what it began."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class PostgresServer(Service):
    """A PostgreSQL cluster in a temporary directory; ``databases`` are created at start."""

    databases: tuple[str, ...] = ("dagster", "mlflow")
    port: int = 0
    directory: Path | None = None
    _started: bool = field(default=False, repr=False)

    def url(self, database: str) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        """For SQLAlchemy users (MLflow): psycopg2 named, since SQLAlchemy 2.1 maps postgresql:// to psycopg
        3."""
        return self.url(database).replace("postgresql://", "postgresql+psycopg2://", 1)

    def start(self) -> PostgresServer:
        missing = missing_binaries(*POSTGRES_BINARIES)
        if missing:
            raise RuntimeError(f"PostgreSQL binaries not on PATH: {missing}")
        prefix = _as_postgres_user()
        # /tmp (not pytest's root-only tmp dir) so the postgres user can reach it
        self.directory = Path(tempfile.mkdtemp(prefix="ecom-pg-"))
        if prefix:
            shutil.chown(self.directory, user="postgres")
        data, log = self.directory / "data", self.directory / "server.log"
        subprocess.run(
            [
                *prefix,
                "initdb",
                "-D",
                str(data),
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        self.port = self.port or free_port()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c max_connections=200"
        )
        subprocess.run(
            [
                *prefix,
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "start",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        self._started = True
        _wait_for_port(self.port, START_TIMEOUT_S, "PostgreSQL", log)
        import psycopg2

        con = psycopg2.connect(self.url("postgres"))
        con.autocommit = True
        with con.cursor() as cur:
            for db in self.databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        con.close()
        return self

    def stop(self) -> None:
        if self.directory is None:
            return
        if self._started:
            subprocess.run(
                [
                    *_as_postgres_user(),
                    "pg_ctl",
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            self._started = False
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


@dataclass
class RedisServer(Service):
    """A redis-server without persistence on a free loopback port."""

    port: int = 0
    directory: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        missing = missing_binaries(*REDIS_BINARIES)
        if missing:
            raise RuntimeError(f"redis-server not on PATH (Debian: apt-get install redis-server): {missing}")
        self.directory = Path(tempfile.mkdtemp(prefix="ecom-redis-"))
        self.port = self.port or free_port()
        log = self.directory / "redis.log"
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, START_TIMEOUT_S, "redis-server", log)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
