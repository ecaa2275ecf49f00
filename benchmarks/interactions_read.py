"""Memory and time of reading features.interactions into pandas: DuckDB's ``fetchdf`` (one Python string
per row and column) against ``warehouse.tables.fetch_frame_shared_strings`` (through Arrow: one object per
distinct string), what ``incremental.interactions.read_interactions`` uses.

A synthetic interactions table with the shape of the 1M-orders shop scaled by ``--rows`` (ids of realistic
length, ~8.5 rows per customer, ~30k products); each read runs in a fresh process and reports its peak RSS
(``ru_maxrss``) above the process's RSS before the read, so the two reads do not share an allocator.
Writes benchmarks/results/interactions_read.{json,md} with the commit and the load average.

    python benchmarks/interactions_read.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def build(path: Path, rows: int) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA features")
    customers = max(1, rows * 10 // 85)
    con.execute(
        f"""
        CREATE TABLE features.interactions AS
        SELECT md5('c' || (range % {customers})) AS customer_id,
               md5('p' || (hash(range) % 30000)) AS product_id,
               'category_' || (hash(range) % 70) AS category,
               CASE WHEN range % 10 < 7 THEN 'view' WHEN range % 10 < 9 THEN 'cart' ELSE 'purchase' END
                   AS event_type,
               TIMESTAMP '2023-01-01' + INTERVAL (range % 63072000) SECOND AS ts,
               1.0 + (range % 5) AS weight,
               'orders' AS source
        FROM range({rows})
        """
    )
    con.close()


def read_once(path: str, how: str) -> None:
    """Child process: one read, then its peak RSS above the baseline, as JSON on stdout."""
    import duckdb

    from ecom_pipeline.incremental.interactions import ORDER, TARGET
    from ecom_pipeline.ml.recsys.interactions import INTERACTION_COLUMNS
    from ecom_pipeline.warehouse.tables import fetch_frame_shared_strings

    con = duckdb.connect(path, read_only=True)
    sql = f"SELECT {', '.join(INTERACTION_COLUMNS)} FROM {TARGET} ORDER BY {ORDER}"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    frame = con.execute(sql).fetchdf() if how == "fetchdf" else fetch_frame_shared_strings(con, sql)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"how": how, "rows": len(frame), "seconds": round(secs, 2), "peak_mb": (peak - base) // 1024}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        read_once(*args.child)
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout.strip()
    res = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit, "rows": args.rows}
    res["load_average_at_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="interactions-read-") as tmp:
        path = Path(tmp) / "w.duckdb"
        build(path, args.rows)
        res["reads"] = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--child", str(path), how],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for how in ("fetchdf", "shared_strings")
        ]
    res["load_average_at_end"] = os.getloadavg()
    old, new = res["reads"]
    md = [
        "# Reading features.interactions into pandas",
        "",
        f"{args.rows:,} synthetic interaction rows (1M-orders shape); commit {res['commit']}, {res['date']}, "
        f"2 cores, load {res['load_average_at_start'][0]:.2f} / {res['load_average_at_end'][0]:.2f}. "
        "Each read in a fresh process; peak RSS above the process's RSS before the read.",
        "",
        "| read | seconds | peak MB |",
        "|---|---:|---:|",
        *(f"| `{r['how']}` | {r['seconds']} | {r['peak_mb']:,} |" for r in res["reads"]),
        "",
        f"Shared strings / fetchdf: memory **{new['peak_mb'] / max(old['peak_mb'], 1):.2f}x**, time "
        f"{new['seconds'] / max(old['seconds'], 1e-9):.2f}x.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "interactions_read.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "interactions_read.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
