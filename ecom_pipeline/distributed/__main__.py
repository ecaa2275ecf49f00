"""``python -m ecom_pipeline.distributed up [--root DIR]``: start the local distributed setup (PostgreSQL,
Redis, Celery workers for queues default and gpu), write DIR/env.sh, and keep it up until Ctrl-C.

In another shell: ``source DIR/env.sh`` then ``dagster dev`` or
``python -m ecom_pipeline.distributed.smoke`` (see docs/deployment.md)."""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

from ecom_pipeline.distributed.local import LocalCluster


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ecom_pipeline.distributed")
    parser.add_argument("command", choices=["up"])
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder for the instance, data, logs and env.sh (default: a new temp folder)",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="also run dagster-daemon on the instance (run queue, schedules, sensors) with "
        "workspace.yaml = the project plus distributed_smoke",
    )
    parser.add_argument(
        "--warehouse",
        choices=["duckdb", "ducklake"],
        default="duckdb",
        help="ducklake: the warehouse as a DuckLake (catalog in the Postgres db 'ducklake', Parquet "
        "files under DIR/lake) that several workers write at once; default: one DuckDB file",
    )
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="ecom-distributed-"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with LocalCluster(root, warehouse=args.warehouse) as cluster:
        env_file = cluster.write_env_file(root / "env.sh")
        if args.daemon:
            cluster.start_daemon()
            print(
                f"dagster-daemon on {root / 'workspace.yaml'}: "
                f"dagster job launch -w {root / 'workspace.yaml'} -j distributed_smoke",
                flush=True,
            )
        print(
            f"PostgreSQL 127.0.0.1:{cluster.postgres.port} (dbs dagster, mlflow), Redis "
            f"127.0.0.1:{cluster.redis.port}, workers {', '.join(cluster.workers)} (logs in "
            f"{root / 'logs'})\nIn another shell: source {env_file}\nCtrl-C stops everything.",
            flush=True,
        )
        try:
            while all(w.process.poll() is None for w in cluster.workers.values()):
                time.sleep(1)
            print("a worker exited; stopping (see its log)", flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
